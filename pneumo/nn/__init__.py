"""The network: the only layer that imports Keras or TensorFlow at module level."""
