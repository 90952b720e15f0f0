"""The crawl service: persistent scheduled jobs (:mod:`.scheduler`) running the passes of :mod:`.jobs`."""
