"""What Transform and Trainer run: preprocessing, the Keras model, its serving signatures and warmup requests."""
