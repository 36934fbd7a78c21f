"""``medfoundry serve``: the web app (being written)."""
