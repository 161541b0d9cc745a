"""Documents' sessions on one engine (`Host`), in-process or on each replica of a Ray Serve pool."""
