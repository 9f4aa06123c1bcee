"""Leakage audit: white-box attacks that measure how much of the input a party recovers from what it sees."""
