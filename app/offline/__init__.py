"""Offline tooling: the corpus and the detector's evaluation on it. Nothing here runs inside a call."""
