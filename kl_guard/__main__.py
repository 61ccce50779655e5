from kl_guard._cli import entry_point

entry_point()
