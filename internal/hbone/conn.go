package hbone

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// This file is the HTTP/2 engine shared by both sides: one h2conn per TLS
// connection, a read loop that owns the Framer's reading side, and a write
// side serialised by wmu. The read loop never blocks on a write: control
// frames it must send (SETTINGS and PING acks, WINDOW_UPDATE, RST_STREAM) go
// to a queue that whoever holds wmu drains (see unlockWriter), so two peers
// whose writers are both stuck on full sockets still read each other's bytes.

// HTTP/2 protocol constants (RFC 9113).
const (
	initialWindowSize = 65535
	maxWindow         = 1<<31 - 1
	defaultMaxFrame   = 16384
	clientPreface     = http2.ClientPreface
)

// Data-path sizes. Measured with BenchmarkTunnelThroughput; see README.md.
const (
	ourMaxFrameSize = 64 << 10  // SETTINGS_MAX_FRAME_SIZE we advertise
	maxWriteBatch   = 256 << 10 // most DATA bytes one Write puts out under one lock and flush
	writeBufSize    = 64 << 10  // bufio.Writer in front of the TLS connection
	maxHeaderList   = 16 << 10  // SETTINGS_MAX_HEADER_LIST_SIZE we advertise and enforce
)

// Defaults shared by Server and Dialer (each field's doc comment repeats its
// default; the idle timeouts differ and stay with their owners).
const (
	defaultMaxStreams       = 100
	defaultStreamWindow     = 4 << 20
	defaultConnWindow       = 16 << 20
	defaultKeepAlive        = 30 * time.Second
	defaultKeepAliveTimeout = 15 * time.Second
)

// connConfig is the part of Server and Dialer settings the engine needs,
// with defaults already applied.
type connConfig struct {
	maxStreams       int   // client: cap on streams we open; server: advertised limit
	streamWindow     int32 // receive window per stream
	connWindow       int32 // receive window per connection
	keepAlive        time.Duration
	keepAliveTimeout time.Duration
	idleTimeout      time.Duration // <0: never
	logger           *slog.Logger
}

// ctrlFrame is a queued control frame.
type ctrlFrame struct {
	typ    http2.FrameType
	stream uint32
	val    uint32 // window increment, error code, or GOAWAY last stream id
	code   http2.ErrCode
	ping   [8]byte
	ack    bool
}

// h2conn is one HTTP/2 connection carrying CONNECT streams.
type h2conn struct {
	nc     net.Conn  // the TLS connection
	wire   *wireConn // the TCP connection under it
	client bool
	cfg    connConfig
	peer   Identity // verified identity of the other side
	fr     *http2.Framer

	// Write side. wmu serialises every write to bw and the Framer's write
	// methods, and the hpack encoder state.
	wmu               sync.Mutex
	bw                *bufio.Writer
	henc              *hpack.Encoder
	hbuf              bytes.Buffer
	dataHdr           [9]byte
	peerHeaderTable   atomic.Uint32 // SETTINGS_HEADER_TABLE_SIZE, applied to henc under wmu
	peerHeaderTableOK atomic.Bool   // henc is in sync with peerHeaderTable

	ctrlMu      sync.Mutex
	ctrl        []ctrlFrame
	ctrlSpare   []ctrlFrame
	ctrlPending atomic.Bool

	// mu guards everything below and the fields of every Stream marked
	// "guarded by c.mu".
	mu             sync.Mutex
	streams        map[uint32]*Stream
	nextID         uint32 // client: next stream id
	lastPeerID     uint32 // server: highest stream id the peer opened
	open           int    // streams not yet closed both ways or reset
	reserved       int    // client: slots handed out by reserve, not yet opened
	sendWindow     int64  // connection window the peer granted us
	recvWindow     int64  // connection window we granted the peer and it has not used
	recvUnacked    int64  // bytes consumed locally, not yet returned with WINDOW_UPDATE
	peerInitWindow int64
	peerMaxFrame   uint32
	peerMaxStreams uint32
	goingAway      bool  // GOAWAY sent or received: no new streams
	err            error // why the connection closed; nil while open
	idleTimer      *time.Timer
	pingAck        chan struct{} // cap 1: a PING ack arrived

	closed   chan struct{} // closed by close
	readDone chan struct{} // closed when readLoop returns
	exited   chan struct{} // closed when readLoop and keepAliveLoop have both returned
	kaDone   chan struct{} // closed when keepAliveLoop returns
	lastRead atomic.Int64  // unix nanos of the last frame read
	gotFrame atomic.Bool   // a frame was read: the peer accepted the connection

	// Hooks, set before start and never changed.
	newStream func(st *Stream, f *http2.MetaHeadersFrame) // server: a HEADERS opened st
	onGone    func(c *h2conn)                             // client: take c out of its pool (GOAWAY, idle, close)
	onExit    func()                                      // called once, after exited is closed
}

func newH2Conn(nc net.Conn, wire *wireConn, client bool, cfg connConfig, peer Identity) *h2conn {
	c := &h2conn{
		nc:             nc,
		wire:           wire,
		client:         client,
		cfg:            cfg,
		peer:           peer,
		bw:             bufio.NewWriterSize(nc, writeBufSize),
		streams:        make(map[uint32]*Stream),
		nextID:         1,
		sendWindow:     initialWindowSize,
		recvWindow:     int64(cfg.connWindow),
		peerInitWindow: initialWindowSize,
		peerMaxFrame:   defaultMaxFrame,
		peerMaxStreams: ^uint32(0),
		pingAck:        make(chan struct{}, 1),
		closed:         make(chan struct{}),
		readDone:       make(chan struct{}),
		exited:         make(chan struct{}),
		kaDone:         make(chan struct{}),
	}
	c.fr = http2.NewFramer(c.bw, nc)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(ourMaxFrameSize)
	c.fr.MaxHeaderListSize = maxHeaderList
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.peerHeaderTable.Store(4096)
	c.peerHeaderTableOK.Store(true)
	c.lastRead.Store(time.Now().UnixNano())
	return c
}

// start writes our preface and settings and starts the read loop and the
// keepalive loop. The server must have read the client preface already.
func (c *h2conn) start() error {
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.streamWindow)},
		{ID: http2.SettingMaxFrameSize, Val: ourMaxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	}
	if c.client {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: uint32(c.cfg.maxStreams)})
	}
	c.lockWriter()
	if c.client {
		c.bw.WriteString(clientPreface)
	}
	err := c.fr.WriteSettings(settings...)
	if err == nil && c.cfg.connWindow > initialWindowSize {
		err = c.fr.WriteWindowUpdate(0, uint32(c.cfg.connWindow-initialWindowSize))
	}
	if err == nil {
		err = c.bw.Flush()
	}
	if werr := c.wire.end(); err == nil {
		err = werr
	}
	c.wmu.Unlock()
	if err != nil {
		c.close(err)
		close(c.readDone)
		close(c.kaDone)
		c.exit()
		return err
	}
	c.mu.Lock()
	c.maybeIdleLocked()
	c.mu.Unlock()
	go c.readLoop()
	go c.keepAliveLoop()
	return nil
}

// readLoop reads frames until the connection fails, then closes it.
func (c *h2conn) readLoop() {
	err := c.readFrames()
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = errConnClosed
	}
	c.close(err)
	close(c.readDone)
	<-c.kaDone
	c.exit()
}

func (c *h2conn) exit() {
	close(c.exited)
	if c.onExit != nil {
		c.onExit()
	}
}

var errConnClosed = errors.New("connection closed")

func (c *h2conn) readFrames() error {
	first := true
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.mu.Lock()
				if !c.client && se.StreamID%2 == 1 && se.StreamID > c.lastPeerID {
					c.lastPeerID = se.StreamID // a malformed request still uses up its id
				}
				c.mu.Unlock()
				c.resetStream(se.StreamID, se.Code, fmt.Errorf("stream error from peer's frame: %w", err))
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.goAway(http2.ErrCode(ce))
			}
			return err
		}
		c.lastRead.Store(time.Now().UnixNano())
		if first {
			if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
				c.goAway(http2.ErrCodeProtocol)
				return errors.New("protocol error: first frame is not SETTINGS")
			}
			first = false
			c.gotFrame.Store(true)
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			err = c.onData(f)
		case *http2.MetaHeadersFrame:
			err = c.onHeaders(f)
		case *http2.SettingsFrame:
			err = c.onSettings(f)
		case *http2.WindowUpdateFrame:
			err = c.onWindowUpdate(f)
		case *http2.PingFrame:
			c.onPing(f)
		case *http2.RSTStreamFrame:
			c.onRSTStream(f)
		case *http2.GoAwayFrame:
			c.onGoAway(f)
		case *http2.PushPromiseFrame:
			err = http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.goAway(http2.ErrCode(ce))
			}
			return err
		}
	}
}

func (c *h2conn) onData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length) // counts padding too
	c.mu.Lock()
	c.recvWindow -= n
	if c.recvWindow < 0 {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	st := c.streams[id]
	if st != nil && st.closedLocal && st.reset == nil && !st.recvEnd && f.Length == 0 && f.StreamEnded() {
		// The peer's clean end of a stream we closed: nothing to refuse.
		st.recvEnd = true
		st.maybeDoneLocked()
		c.mu.Unlock()
		return nil
	}
	if st == nil || st.recvEnd || st.reset != nil || st.closedLocal {
		// Nobody will read these bytes: return them to the connection
		// window now, and tell a peer still sending on a stream we have
		// closed to stop (as TCP answers data for a closed socket).
		c.creditConnLocked(n)
		var rst bool
		if st != nil && st.reset == nil {
			code := http2.ErrCodeStreamClosed
			if st.closedLocal {
				code = http2.ErrCodeCancel
			}
			st.resetLocked(errStreamClosedLocally)
			rst = true
			c.queueCtrl(ctrlFrame{typ: http2.FrameRSTStream, stream: id, code: code})
		}
		c.mu.Unlock()
		if rst {
			c.kickWriter()
		}
		if st == nil && !c.seenStreamID(id) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil
	}
	st.recvWindow -= n
	if st.recvWindow < 0 {
		c.creditConnLocked(n)
		st.resetLocked(errors.New("peer overran the stream window"))
		c.queueCtrl(ctrlFrame{typ: http2.FrameRSTStream, stream: id, code: http2.ErrCodeFlowControl})
		c.mu.Unlock()
		c.kickWriter()
		return nil
	}
	data := f.Data()
	st.recv.write(data)
	if pad := n - int64(len(data)); pad > 0 {
		c.creditConnLocked(pad)
		st.creditLocked(pad)
	}
	if f.StreamEnded() {
		st.recvEnd = true
		st.maybeDoneLocked()
	}
	wake(st.readWake)
	c.mu.Unlock()
	c.kickWriter()
	return nil
}

// seenStreamID reports whether id names a stream that existed at some point.
func (c *h2conn) seenStreamID(id uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client {
		return id%2 == 1 && id < c.nextID
	}
	return id <= c.lastPeerID
}

func (c *h2conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		defer c.kickWriter()
		defer c.mu.Unlock()
		return c.onStreamHeadersLocked(st, f)
	}
	if c.client {
		c.mu.Unlock()
		if !c.seenStreamID(id) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // a stream we already closed
	}
	if id%2 == 0 || id <= c.lastPeerID {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.lastPeerID = id
	if c.goingAway || c.err != nil || c.open >= c.cfg.maxStreams || len(c.streams) >= 2*c.cfg.maxStreams {
		c.queueCtrl(ctrlFrame{typ: http2.FrameRSTStream, stream: id, code: http2.ErrCodeRefusedStream})
		c.mu.Unlock()
		c.kickWriter()
		return nil
	}
	st := c.addStreamLocked(id)
	st.recvEnd = f.StreamEnded()
	c.mu.Unlock()
	c.newStream(st, f)
	return nil
}

// onStreamHeadersLocked handles HEADERS on an existing stream: the response
// on the client side, trailers on either side.
func (c *h2conn) onStreamHeadersLocked(st *Stream, f *http2.MetaHeadersFrame) error {
	if st.recvEnd {
		st.resetLocked(errors.New("HEADERS after END_STREAM"))
		c.queueCtrl(ctrlFrame{typ: http2.FrameRSTStream, stream: st.id, code: http2.ErrCodeStreamClosed})
		return nil
	}
	if c.client && st.status == 0 {
		code, err := parseStatus(f.PseudoValue("status"))
		if err != nil {
			st.resetLocked(err)
			c.queueCtrl(ctrlFrame{typ: http2.FrameRSTStream, stream: st.id, code: http2.ErrCodeProtocol})
			return nil
		}
		if code >= 100 && code < 200 {
			return nil // informational; the final response follows
		}
		st.status = code
		st.up = code == 200
		st.respClosed = true
		close(st.respDone)
	} else if !f.StreamEnded() {
		// Trailers must end the stream.
		st.resetLocked(errors.New("trailers without END_STREAM"))
		c.queueCtrl(ctrlFrame{typ: http2.FrameRSTStream, stream: st.id, code: http2.ErrCodeProtocol})
		return nil
	}
	if f.StreamEnded() {
		st.recvEnd = true
		st.maybeDoneLocked()
		wake(st.readWake)
	}
	return nil
}

func parseStatus(s string) (int, error) {
	if len(s) != 3 {
		return 0, fmt.Errorf("invalid :status %q", s)
	}
	n := 0
	for _, b := range []byte(s) {
		if b < '0' || b > '9' {
			return 0, fmt.Errorf("invalid :status %q", s)
		}
		n = n*10 + int(b-'0')
	}
	return n, nil
}

func (c *h2conn) addStreamLocked(id uint32) *Stream {
	st := &Stream{
		c:          c,
		id:         id,
		recvWindow: int64(c.cfg.streamWindow),
		sendWindow: c.peerInitWindow,
		readWake:   make(chan struct{}, 1),
		writeWake:  make(chan struct{}, 1),
		counted:    true,
	}
	if c.client {
		st.respDone = make(chan struct{})
	}
	c.streams[id] = st
	c.open++
	c.stopIdleLocked()
	return st
}

func (c *h2conn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if f.HasDuplicates() {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWindow
			c.peerInitWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				wake(st.writeWake)
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams = s.Val
		case http2.SettingHeaderTableSize:
			c.peerHeaderTable.Store(s.Val)
			c.peerHeaderTableOK.Store(false)
		}
		return nil
	})
	if err == nil {
		c.queueCtrl(ctrlFrame{typ: http2.FrameSettings, ack: true})
	}
	c.mu.Unlock()
	c.kickWriter()
	return err
}

func (c *h2conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWindow += inc
		if c.sendWindow > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		for _, st := range c.streams {
			wake(st.writeWake)
		}
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		return nil
	}
	st.sendWindow += inc
	if st.sendWindow > maxWindow {
		st.resetLocked(errors.New("peer overflowed the stream window"))
		c.queueCtrl(ctrlFrame{typ: http2.FrameRSTStream, stream: st.id, code: http2.ErrCodeFlowControl})
		defer c.kickWriter()
		return nil
	}
	wake(st.writeWake)
	return nil
}

func (c *h2conn) onPing(f *http2.PingFrame) {
	if f.IsAck() {
		wake(c.pingAck)
		return
	}
	c.mu.Lock()
	c.queueCtrl(ctrlFrame{typ: http2.FramePing, ack: true, ping: f.Data})
	c.mu.Unlock()
	c.kickWriter()
}

func (c *h2conn) onRSTStream(f *http2.RSTStreamFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[f.StreamID]
	if st == nil || st.reset != nil {
		return
	}
	err := error(streamResetError{f.ErrCode})
	if f.ErrCode == http2.ErrCodeRefusedStream {
		err = errStreamRefused
	}
	st.resetLocked(err)
}

// streamResetError is the error of a stream the peer reset.
type streamResetError struct{ code http2.ErrCode }

func (e streamResetError) Error() string { return "hbone: stream reset by peer: " + e.code.String() }

func (c *h2conn) onGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goingAway = true
	for id, st := range c.streams {
		if id > f.LastStreamID && st.reset == nil {
			// Never processed by the server: safe to retry elsewhere.
			st.resetLocked(errStreamRefused)
		}
	}
	c.maybeIdleLocked()
	c.mu.Unlock()
	if c.onGone != nil {
		c.onGone(c)
	}
	c.cfg.logger.Debug("hbone: peer sent GOAWAY", "peer", c.nc.RemoteAddr(), "code", f.ErrCode, "last_stream", f.LastStreamID)
}

// resetStream resets stream id (if still known) with code and tells the peer.
func (c *h2conn) resetStream(id uint32, code http2.ErrCode, err error) {
	c.mu.Lock()
	if st := c.streams[id]; st != nil && st.reset == nil {
		st.resetLocked(err)
	}
	c.queueCtrl(ctrlFrame{typ: http2.FrameRSTStream, stream: id, code: code})
	c.mu.Unlock()
	c.kickWriter()
}

// creditConnLocked records n consumed bytes at connection level and queues
// a WINDOW_UPDATE once a quarter of the window is owed.
func (c *h2conn) creditConnLocked(n int64) {
	c.recvUnacked += n
	if c.recvUnacked >= int64(c.cfg.connWindow)/4 {
		c.queueCtrl(ctrlFrame{typ: http2.FrameWindowUpdate, val: uint32(c.recvUnacked)})
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
	}
}

// goAway queues a GOAWAY with code and stops new streams.
func (c *h2conn) goAway(code http2.ErrCode) {
	c.mu.Lock()
	c.goingAway = true
	c.queueCtrl(ctrlFrame{typ: http2.FrameGoAway, val: c.lastPeerID, code: code})
	c.mu.Unlock()
	c.kickWriter()
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
