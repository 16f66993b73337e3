//! Router tests without a socket (`oneshot`) and protocol tests over a real loopback socket.
