"""Puts the project root on the import path for pytest (so ``import engine`` works from any runner)."""
