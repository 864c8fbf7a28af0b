// Package registry knows who is connected: it maps users, groups and "everyone" to the
// connections of one shard, names the backplane channel of each audience (Topics), and keeps
// the node-wide connection limits. It holds no sockets and does no I/O; an engine owns one
// Shard per event loop and serialises access to it.
package registry
