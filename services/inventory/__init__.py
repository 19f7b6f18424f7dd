"""The inventory service: the catalogue and the stock, reserved, committed or released."""
