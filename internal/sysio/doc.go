// Package sysio reads and writes sockets with raw read(2) and write(2)
// calls, for the relay's hot path.
//
// A goroutine waits for a socket exactly as with net.Conn: when there is
// nothing to read or no room to write, it parks on the runtime's network
// poller (syscall.RawConn), and the connection's deadlines and Close apply.
// What differs is the call itself. net.Conn makes it as a system call that
// may block (runtime.entersyscall), and entering one wakes the runtime's
// sysmon thread whenever every P was idle; a relay whose calls come and go
// is in that state between most of them, so sysmon wakes, polls every 20 µs
// and sleeps again, over and over. On a socket in non-blocking mode, as
// package net leaves every socket, the call cannot block, so it need not
// tell the scheduler. In perf profiles of a relay under load, sysmon and
// the entry and exit of system calls were a fifth of its CPU time.
//
// It is not a general net.Conn replacement: it has no ReadFrom or WriteTo,
// no buffering, and no Close (close the net.Conn); one goroutine may read
// while another writes, but reads (writes) must not overlap. Connections
// that are not sockets of package net (pipes, test wrappers) are returned
// as they are. The race detector does not see the kernel fill a read
// buffer, as it does through syscall.Read, and a write holds its P while
// the kernel copies into the socket buffer (at most its free space).
package sysio
