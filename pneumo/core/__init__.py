"""The foundation: config, paths, io, the process runner, images, DICOM, metrics and tables.

Imports no TensorFlow and nothing above it."""
