"""A local multi-node lab: an underlay switch, an etcd host and N node hosts, each a network
namespace on this machine, with one real etcd and one real agent per node."""
