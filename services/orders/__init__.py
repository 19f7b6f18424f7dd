"""The orders service: accepts orders and follows each one's saga to CONFIRMED or CANCELLED."""
