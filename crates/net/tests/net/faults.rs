//! Faults on real sockets from the project's own fault-injecting relay (latency, loss,
//! partitions) and from `tc tbf` rate limits in network namespaces. (Tests are added with the relay.)
