"""systemd: sd_notify (readiness, status, watchdog) and the user unit."""
