"""Drills: a Locust load, one operation at a set time, a per-second timeline and a report."""
