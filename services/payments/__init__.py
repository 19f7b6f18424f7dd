"""The payments service: charges reserved orders, once each (simulated provider)."""
