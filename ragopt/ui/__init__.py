"""Figures, widgets and reports over Runs; nothing below this room imports it."""
