// Package netstack is a pool's network: a named network namespace (bind-mounted
// at /run/netns/<prefix>-<pool>, as `ip netns add` does, so `ip netns exec`
// works and it lives with no process in it), a veth pair whose host end
// (<prefix>-<pool>-h) stays in the host namespace and whose other end is eth0 in
// the pool's namespace, one address on each end, a default route in the pool
// through the host end, and a TBF rate limit on each end's egress: the host
// end's egress is the traffic into the pool, eth0's egress the traffic out of it.
// Everything goes through github.com/vishvananda/netlink; nothing shells out.
//
// Setup builds one pool's network, (*Pool).Teardown removes it, Reconcile
// removes what a crashed process left behind.
//
// # Invariants
//
//   - Every object netstack creates carries a name it can recognise again
//     without any state: the namespace file /run/netns/<prefix>-<pool> and the
//     veth <prefix>-<pool>-h (its link alias is "polytropon:<pool>"). Reconcile
//     relies on nothing else, so a crash at any point of Setup leaves only
//     things Reconcile removes.
//   - Setup either returns a complete Pool or removes what it created.
//   - No goroutine leaves netstack in another network namespace: the thread that
//     creates a namespace is locked and never unlocked, so the runtime discards
//     it when its goroutine ends; everything else works through netlink handles
//     bound to a namespace.
//
// # Lock order
//
// netstack has no locks. A Pool is not safe for concurrent Teardown calls;
// Setup and Reconcile for the same prefix must not run concurrently either
// (the caller, serve, is single-threaded in its pool lifecycle).
//
// Measure: TestRateLimitTakesEffect (root) checks each direction's rate
// limit against traffic through the veth; nothing else here is on a measured
// path.
package netstack
