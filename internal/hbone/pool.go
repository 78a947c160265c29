package hbone

import (
	"context"
	"slices"
)

// poolKey selects the connections a tunnel may share: same client
// certificate, same expected server identity, same next hop.
type poolKey struct {
	src, dst Identity
	addr     string
}

// pool holds the connections of one key and the dial in flight, if any.
type pool struct {
	conns []*h2conn
	dial  *dialCall
}

// dialCall is one shared connection attempt: every DialContext that finds
// the pool full while it runs waits for it instead of dialling too.
type dialCall struct {
	done chan struct{}
	err  error
}

// acquire returns a connection of key with a stream slot reserved for the
// caller, dialling a new connection when none has room.
func (d *Dialer) acquire(ctx context.Context, key poolKey) (*h2conn, error) {
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, errDialerClosed
		}
		p := d.pools[key]
		if p == nil {
			p = &pool{}
			d.pools[key] = p
		}
		for _, c := range p.conns {
			if c.reserve() {
				d.mu.Unlock()
				return c, nil
			}
		}
		call := p.dial
		if call == nil {
			call = &dialCall{done: make(chan struct{})}
			p.dial = call
			d.wg.Add(1)
			go d.dial(key, p, call)
		}
		d.mu.Unlock()

		select {
		case <-call.done:
			if call.err != nil {
				return nil, call.err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// dial runs a shared connection attempt. It does not use any caller's
// context: one caller giving up must not fail the others.
func (d *Dialer) dial(key poolKey, p *pool, call *dialCall) {
	defer d.wg.Done()
	c, err := d.newConn(d.ctx, key)
	d.mu.Lock()
	p.dial = nil
	call.err = err
	if err == nil {
		p.conns = append(p.conns, c)
	} else if len(p.conns) == 0 && d.pools[key] == p {
		delete(d.pools, key)
	}
	close(call.done)
	d.mu.Unlock()
	if err != nil {
		d.cfg.logger.Info("hbone: connection failed", "address", key.addr, "destination", key.dst.String(), "err", err)
	}
}

// remove takes c out of the pool of key (it is closing, idle or got GOAWAY).
func (d *Dialer) remove(key poolKey, c *h2conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.pools[key]
	if p == nil {
		return
	}
	p.conns = slices.DeleteFunc(p.conns, func(x *h2conn) bool { return x == c })
	if len(p.conns) == 0 && p.dial == nil {
		delete(d.pools, key)
	}
}

// poolSize returns how many connections key has (for tests and stats).
func (d *Dialer) poolSize(key poolKey) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.pools[key]; p != nil {
		return len(p.conns)
	}
	return 0
}
