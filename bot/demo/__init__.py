"""Demo mode only: the zero-configuration gateway's sample configuration, its clean restart
and sample appointment, the in-process sandbox it uses as its provider, and the simulator
page's endpoints (a phone in the browser)."""
