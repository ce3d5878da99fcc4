"""The dispatcher: one queue per server, claimed safely, run through ansible-runner."""
