"""Test and benchmark peers that speak the providers' wire protocols over real sockets."""
