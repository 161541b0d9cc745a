"""Benchmarks (`kvsplice bench ...`) and the real-code cases they replay. They may import every
other package; nothing imports them."""
