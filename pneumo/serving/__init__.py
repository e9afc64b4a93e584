"""Answers about images: predict (Keras or LiteRT) and the LiteRT runtime."""
