//! anykv gossip: Fly DNS discovery, SWIM membership, node metadata and RTT
//! estimates. Built by the cluster-membership issue; empty until then.
