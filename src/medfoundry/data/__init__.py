"""Sampling, augmentation and batches for training: patches read from the preprocessed cache."""
