"""Transducer search over joiner logits; knows no model family."""
