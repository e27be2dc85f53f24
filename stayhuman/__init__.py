"""StayHuman's command line: run the stack, apply configuration, migrate, inspect."""
