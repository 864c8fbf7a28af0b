package gwsengine

import "github.com/lxzan/gws"

// slot is the gws session storage of a socket. It carries the socket's *conn (nil for a
// rejected socket) in place of gws's default map, which would cost a lock and a lookup per
// event. The key/value methods exist only to satisfy gws.SessionStorage; nothing uses them.
type slot struct{ c *conn }

func (*slot) Len() int                     { return 0 }
func (*slot) Load(string) (any, bool)      { return nil, false }
func (*slot) Delete(string)                {}
func (*slot) Store(string, any)            {}
func (*slot) Range(func(string, any) bool) {}

func connOf(socket *gws.Conn) *conn { return socket.Session().(*slot).c }

// events receives gws's callbacks for every socket of one engine. All of them run on the
// socket's read goroutine.
type events struct{ e *Engine }

func (events) OnOpen(*gws.Conn) {}

func (ev events) OnMessage(socket *gws.Conn, msg *gws.Message) {
	defer msg.Close() // back to gws's pool; what is queued below does not point into it
	c := connOf(socket)
	if c == nil || c.closing() {
		return // a rejected socket, or a client still talking after our close frame
	}
	ev.e.metrics.MessagesReceived.Inc()
	switch msg.Opcode {
	case gws.OpcodeText:
		if c.onResumeFrame(msg.Bytes()) {
			return
		}
		act := ev.e.opts.Policy.OnText(&c.id, &c.in, c.wire.readAt, msg.Bytes())
		if !act.Expires.IsZero() {
			c.expires.Store(act.Expires.UnixNano())
		}
		if act.Close != 0 {
			c.shut(act.Close, act.Reply, false)
			return
		}
		if act.Refresh {
			c.refresh(act)
			return
		}
		if reply := c.reply(&act, msg.Bytes()); reply != nil {
			c.send(gws.OpcodeText, reply)
		}
	case gws.OpcodeBinary:
		c.send(gws.OpcodeBinary, append([]byte(nil), msg.Bytes()...)) // msg goes back to gws's pool
	}
}

func (events) OnPing(socket *gws.Conn, payload []byte) {
	if c := connOf(socket); c != nil {
		c.send(gws.OpcodePong, payload) // gws allocated payload for this ping alone
	}
}

// OnPong has nothing to do: the wire has already stamped the read that carried it.
func (events) OnPong(*gws.Conn, []byte) {}

// OnClose runs once per socket, when its read loop has ended. For an accepted connection it is
// the one place the connection is released: out of its shard, Hooks.Closed, then the socket.
func (ev events) OnClose(socket *gws.Conn, err error) {
	c := connOf(socket)
	w := socket.NetConn().(*wire)
	if c == nil {
		_ = w.release()
		return
	}
	c.end()
	c.endV2()
	code, unanswered := c.endCode(err)
	if c.shard.remove(c) {
		ev.e.metrics.ConnectionsActive.Dec()
		ev.e.opts.Hooks.Closed(&c.id, code)
	}
	if unanswered {
		w.linger()
	}
	_ = w.release()
	close(c.done)
}
