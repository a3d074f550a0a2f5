"""Forensics: BadNets poisoning of a training set, and detection of the poisoned points as the nearest
training points of triggered queries under each kernel (precision and recall)."""
