"""Record keeping over runs: the promotion gate, diffs, workspaces, the README blocks, the experiment
record. No TensorFlow."""
