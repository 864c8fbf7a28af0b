package bench

import (
	"fmt"
	"strconv"
	"time"
)

// Scenario names.
const (
	ScenarioIdle      = "idle"
	ScenarioFanout    = "fanout"
	ScenarioClassroom = "classroom"
	ScenarioBroadcast = "broadcast"
	ScenarioChurn     = "churn"
	ScenarioEcho      = "echo"
)

// Scenarios lists every scenario, in the order the help text shows them.
var scenarioNames = []string{ScenarioIdle, ScenarioFanout, ScenarioClassroom, ScenarioBroadcast, ScenarioChurn, ScenarioEcho}

// Params is one scenario run as every process of it sees it: the parent builds it from flags
// and hands it, with a share of the connections, to each worker process as JSON.
type Params struct {
	Scenario string `json:"scenario"`
	Label    string `json:"label,omitempty"` // e.g. the engine name, shown in reports
	URL      string `json:"url"`             // ws://host:port/ws
	// URLs, when set, are the endpoints of several nodes sharing one backplane (the fleet
	// bench); connection i dials URLs[Node(i)] and URL is not used.
	URLs []string `json:"urls,omitempty"`
	Run  string   `json:"run"` // run id: names users and groups, stamps payloads

	Conns  int `json:"conns"`  // N
	Users  int `json:"users"`  // U (fanout); 0 means one user per connection
	Groups int `json:"groups"` // C (classroom)
	Size   int `json:"size"`   // S, members per group (classroom)

	Messages int `json:"messages"` // M (fanout)
	Repeat   int `json:"repeat"`   // publishes per group (classroom) or broadcasts
	Payload  int `json:"payload"`  // payload size in bytes (padded)

	// PublishVia is "redis" (plain PUBLISH: live only), "fcall" (the service's Redis function,
	// FCALL ws_publish: appended to the stream's history, so v2 clients can resume it) or "api".
	PublishVia string `json:"publish_via"`
	RedisURL   string `json:"redis_url,omitempty"` // for PublishVia redis and fcall
	// Protocol is the clients' protocol: "v1" (the default) or "v2" (they offer
	// notifications.v2, send a resume frame on open, and resume with their cursors after a
	// reconnect; docs/PROTOCOL.md).
	Protocol string `json:"protocol,omitempty"`
	// RedisCluster publishes with SPUBLISH to the master serving each channel's slot, as the
	// service subscribes on a cluster (sharded Pub/Sub); RedisURL then lists seed nodes.
	RedisCluster bool    `json:"redis_cluster,omitempty"`
	APIURL       string  `json:"api_url,omitempty"` // http://host:port/api/publish
	APIKey       string  `json:"api_key,omitempty"` // PUBLISH_API_KEY
	PublishRate  float64 `json:"publish_rate"`      // messages/s, 0 = as fast as possible
	Pipeline     int     `json:"pipeline"`          // messages per Redis pipeline
	Publishers   int     `json:"publishers"`        // Redis connections publishing in parallel
	// LibraryPublisher publishes with go-redis pipelines instead of the streaming RESP writer.
	LibraryPublisher bool `json:"library_publisher,omitempty"`
	Drop             int  `json:"drop_consumers"` // consumers closed after half their messages
	// Reconnect, when set, makes a connection the server drops reconnect to another of URLs
	// (the reconnect storm) instead of counting as closed by the server.
	Reconnect *ReconnectPolicy `json:"reconnect,omitempty"`
	Channels  Names            `json:"channels"` // channel naming
	Tokens    TokenOptions     `json:"tokens"`

	Hold        time.Duration `json:"hold"`          // idle: how long to hold before measuring
	Duration    time.Duration `json:"duration"`      // churn, echo
	Rate        float64       `json:"rate"`          // churn: connections per second
	ChurnHold   time.Duration `json:"churn_hold"`    // churn: how long each connection stays
	Wait        time.Duration `json:"wait"`          // max wait for deliveries after publishing
	Quiet       time.Duration `json:"quiet"`         // stop waiting after this long with no delivery
	Concurrency int           `json:"concurrency"`   // dials in flight per process
	Src         []string      `json:"src,omitempty"` // source addresses
	ReadBuffer  int           `json:"read_buffer"`   // client read buffer bytes
	Procs       int           `json:"procs"`         // worker processes
	PID         int           `json:"pid,omitempty"`
	RedisPID    int           `json:"redis_pid,omitempty"` // redis-server pid, for its CPU time
	// PIDs and RedisPIDs replace PID and RedisPID when several servers (a fleet) or several
	// redis-servers (a cluster) do the work: their memory and CPU are summed.
	PIDs      []int `json:"pids,omitempty"`
	RedisPIDs []int `json:"redis_pids,omitempty"`

	// Lo and Hi bound the connection indices this process owns: [Lo, Hi).
	Lo int `json:"lo"`
	Hi int `json:"hi"`
}

// Names is how channels and audiences are named (the defaults of docs/PROTOCOL.md "Channels").
type Names struct {
	UserPrefix  string `json:"user_prefix"`
	GroupPrefix string `json:"group_prefix"`
	Broadcast   string `json:"broadcast"`
}

// DefaultNames are the service defaults.
func DefaultNames() Names {
	return Names{UserPrefix: "ws:", GroupPrefix: "ws-group:", Broadcast: "ws-broadcast"}
}

// Identity is who connection i authenticates as.
type Identity struct {
	User   string
	Groups []string
}

// serverPIDs lists the server processes whose memory and CPU the run reads.
func (p *Params) serverPIDs() []int { return pidList(p.PIDs, p.PID) }

// redisPIDs lists the redis-server processes whose CPU the run reads.
func (p *Params) redisPIDs() []int { return pidList(p.RedisPIDs, p.RedisPID) }

func pidList(many []int, one int) []int {
	if len(many) > 0 {
		return many
	}
	if one > 0 {
		return []int{one}
	}
	return nil
}

// Node is the index into URLs of the node connection i dials: round-robin, shifted by one
// node for each further connection of the same user, so a group's members and a user's
// several connections both land on different nodes (what the backplane must then bridge).
func (p *Params) Node(i int) int {
	if len(p.URLs) == 0 {
		return 0
	}
	u := p.users()
	return (i%u + i/u) % len(p.URLs)
}

// endpoint is the WebSocket URL connection i dials.
func (p *Params) endpoint(i int) string {
	if len(p.URLs) == 0 {
		return p.URL
	}
	return p.URLs[p.Node(i)]
}

// usesPublisher reports whether the scenario publishes messages and accounts for them.
func (p *Params) usesPublisher() bool {
	switch p.Scenario {
	case ScenarioFanout, ScenarioClassroom, ScenarioBroadcast:
		return true
	}
	return false
}

// users is the number of distinct users of the run.
func (p *Params) users() int {
	if p.Scenario == ScenarioFanout && p.Users > 0 && p.Users < p.Conns {
		return p.Users
	}
	return p.Conns
}

// userName and groupName carry the run id so runs against one server (or one Redis) never
// see each other's messages.
func (p *Params) userName(u int) string  { return p.Run + "-u" + strconv.Itoa(u) }
func (p *Params) groupName(g int) string { return p.Run + "-g" + strconv.Itoa(g) }

// Identity returns the identity of connection i when tokens are minted by the harness:
// fanout spreads connections round-robin over U users; every other scenario gives each
// connection its own user; classroom puts connections [g·S, (g+1)·S) in group g.
func (p *Params) Identity(i int) Identity {
	id := Identity{User: p.userName(i % p.users())}
	if p.Scenario == ScenarioClassroom && p.Size > 0 {
		id.Groups = []string{p.groupName(i / p.Size)}
	}
	return id
}

// Target is one audience the publisher sends to, and how many messages it gets.
type Target struct {
	Channel string
	Count   int
}

// Targets lists what the publisher sends: fanout sends M messages round-robin over the
// users, classroom Repeat messages to each group, broadcast Repeat messages to everyone.
// The index of a target in this list is the target number stamped into its payloads.
func (p *Params) Targets() []Target {
	switch p.Scenario {
	case ScenarioFanout:
		u := p.users()
		out := make([]Target, u)
		for j := range out {
			out[j] = Target{Channel: p.Channels.UserPrefix + p.userName(j), Count: p.Messages / u}
			if j < p.Messages%u {
				out[j].Count++
			}
		}
		return out
	case ScenarioClassroom:
		out := make([]Target, p.Groups)
		for g := range out {
			out[g] = Target{Channel: p.Channels.GroupPrefix + p.groupName(g), Count: p.Repeat}
		}
		return out
	case ScenarioBroadcast:
		return []Target{{Channel: p.Channels.Broadcast, Count: p.Repeat}}
	}
	return nil
}

// Subscriptions returns the targets connection i receives (indices into Targets).
func (p *Params) Subscriptions(i int) []int {
	switch p.Scenario {
	case ScenarioFanout:
		return []int{i % p.users()}
	case ScenarioClassroom:
		if p.Size > 0 && i/p.Size < p.Groups {
			return []int{i / p.Size}
		}
	case ScenarioBroadcast:
		return []int{0}
	}
	return nil
}

// Normalize fills in derived sizes and checks the parameters make sense together.
func (p *Params) Normalize() error {
	if p.Scenario == ScenarioClassroom {
		if p.Groups <= 0 || p.Size <= 0 {
			return fmt.Errorf("classroom needs --groups and --size above 0")
		}
		p.Conns = p.Groups * p.Size
	}
	if p.Conns <= 0 {
		return fmt.Errorf("--conns must be above 0")
	}
	if p.Hi == 0 {
		p.Lo, p.Hi = 0, p.Conns
	}
	if p.Channels == (Names{}) {
		p.Channels = DefaultNames()
	}
	if p.Run == "" {
		p.Run = "b" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	}
	if p.Repeat <= 0 {
		p.Repeat = 1
	}
	if p.Pipeline <= 0 {
		p.Pipeline = 256
	}
	if p.Publishers <= 0 {
		p.Publishers = 4
	}
	if p.Concurrency <= 0 {
		p.Concurrency = 64
	}
	if p.ReadBuffer <= 0 {
		p.ReadBuffer = 1024
	}
	if p.Procs <= 0 {
		p.Procs = 1
	}
	if p.Wait <= 0 {
		p.Wait = 30 * time.Second
	}
	if p.Quiet <= 0 {
		p.Quiet = 3 * time.Second
	}
	switch p.Scenario {
	case ScenarioFanout:
		if p.Messages <= 0 {
			return fmt.Errorf("fanout needs --messages above 0")
		}
	case ScenarioChurn:
		if p.Rate <= 0 || p.Duration <= 0 {
			return fmt.Errorf("churn needs --rate and --duration above 0")
		}
	case ScenarioEcho:
		if p.Duration <= 0 {
			return fmt.Errorf("echo needs --duration above 0")
		}
	case ScenarioIdle, ScenarioClassroom, ScenarioBroadcast:
	default:
		return fmt.Errorf("unknown scenario %q (want one of %v)", p.Scenario, scenarioNames)
	}
	switch p.Protocol {
	case "", ProtocolV1, ProtocolV2:
	default:
		return fmt.Errorf("--protocol must be v1 or v2, not %q", p.Protocol)
	}
	if p.usesPublisher() {
		switch p.PublishVia {
		case "redis", "fcall":
			if p.RedisURL == "" {
				return fmt.Errorf("publishing through redis needs --redis URL")
			}
		case "api":
			if p.APIURL == "" || p.APIKey == "" {
				return fmt.Errorf("publishing through the API needs --api-key (and the server's PUBLISH_API_KEY set)")
			}
		default:
			return fmt.Errorf("--publish must be redis, fcall or api, not %q", p.PublishVia)
		}
		if p.Drop > p.Conns {
			return fmt.Errorf("--drop-consumers %d is more than --conns %d", p.Drop, p.Conns)
		}
	}
	return nil
}
