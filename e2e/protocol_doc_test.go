package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/internal/v2client"
)

// docNumber is a number in a documented redis-cli reply; any number stands there.
var docNumber = regexp.MustCompile(`"[0-9]+"`)

// fcallExample is docs/PROTOCOL.md "Three ways to publish with a position", Redis part: the
// `$ redis-cli FCALL ws_publish …` line with the reply shown under it, and the FCALL line a
// PUBLISH "becomes".
type fcallExample struct {
	shell   string   // the command after "$ "
	reply   []string // the documented reply, one line each
	becomes string   // the Redis command of the "becomes" block
}

func readFCALLExample(t *testing.T) fcallExample {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "PROTOCOL.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n### Three ways to publish with a position\n")
	if !ok {
		t.Fatal(`docs/PROTOCOL.md has no "### Three ways to publish with a position" section`)
	}
	section, _, _ = strings.Cut(section, "\n### ")
	var ex fcallExample
	for _, m := range fence.FindAllStringSubmatch(section, -1) {
		lines := strings.Split(strings.TrimSpace(m[2]), "\n")
		if cmd, ok := strings.CutPrefix(lines[0], "$ redis-cli FCALL ws_publish "); ok {
			ex.shell, ex.reply = "redis-cli FCALL ws_publish "+cmd, lines[1:]
		} else if len(lines) == 1 && strings.HasPrefix(lines[0], "FCALL ws_publish ") {
			ex.becomes = lines[0]
		}
	}
	if ex.shell == "" || len(ex.reply) == 0 || ex.becomes == "" {
		t.Fatalf("the section shows no `$ redis-cli FCALL ws_publish` line with its reply, or no FCALL line a PUBLISH becomes: %+v", ex)
	}
	return ex
}

// TestProtocolFCALLExampleRunsAsWritten runs docs/PROTOCOL.md's FCALL example as written, with
// the real redis-cli, against a private Redis where the service installed the library: the
// `$ redis-cli FCALL ws_publish …` line, then the FCALL line of the "PUBLISH becomes" block
// (given to redis-cli as well). Each answers as documented (three numbers, the second the
// stream's sequence: 1, then 2); a v2 client of user u1 receives each message on its `user`
// stream with a cursor naming the position redis-cli printed, and a client resuming from the
// cursor the first client had before both gets them replayed from the history, then a
// recovered sync.
//
// Two deviations, for a test: redis-cli reaches the private server (a shell function adds
// -p), and it prints as at a terminal (--no-raw), which the documented reply shows.
func TestProtocolFCALLExampleRunsAsWritten(t *testing.T) {
	ex := readFCALLExample(t)
	if _, err := exec.LookPath("redis-cli"); err != nil {
		testenv.Missing(t, "redis-cli not found: apt-get install redis-tools")
	}
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	svc := servicetest.Start(t, servicetest.Options{Engine: servicetest.Engines()[0], RedisURL: srv.URL()})
	testenv.Eventually(t, 10*time.Second, "the service installed the function library", func() bool {
		libs, err := rdb.FunctionList(t.Context(), redis.FunctionListQuery{LibraryNamePattern: history.LibraryName}).Result()
		return err == nil && len(libs) == 1
	})

	live := dialV2(t, svc, "u1", nil)
	before := userSync(t, live)

	_, port, _ := strings.Cut(srv.Addr(), ":")
	redisCLI := "redis-cli() { command redis-cli -h 127.0.0.1 -p " + port + " --no-raw \"$@\"; }\n"
	replyLine := make([]*regexp.Regexp, len(ex.reply))
	for i, l := range ex.reply {
		replyLine[i] = regexp.MustCompile("^" + docNumber.ReplaceAllString(regexp.QuoteMeta(l), `"([0-9]+)"`) + "$")
	}
	var published []history.Position
	for i, cmd := range []string{ex.shell, "redis-cli " + ex.becomes} {
		out := strings.Split(strings.TrimSpace(shell(t, t.TempDir(), os.Environ(), 10*time.Second, redisCLI+cmd)), "\n")
		var nums []uint64
		for j, re := range replyLine {
			var m []string
			if j < len(out) {
				m = re.FindStringSubmatch(out[j])
			}
			if m == nil || len(out) != len(replyLine) {
				t.Fatalf("%s answered\n%s\nwant the documented shape\n%s", cmd, strings.Join(out, "\n"), strings.Join(ex.reply, "\n"))
			}
			n, _ := strconv.ParseUint(m[1], 10, 64)
			nums = append(nums, n)
		}
		p := history.Position{Epoch: nums[0], Seq: nums[1], Tag: uint32(nums[2])}
		if p.Seq != uint64(i+1) || p.Epoch == 0 {
			t.Fatalf("%s: position %+v, want sequence %d of stream user", cmd, p, i+1)
		}
		published = append(published, p)
		f := nextMessage(t, live)
		if got, err := history.ParseCursor(f.CursorString()); f.Stream != "user" || err != nil || got != p {
			t.Fatalf("after %s the client got %s (cursor %v), want a message on stream user at %+v", cmd, f.Raw, err, p)
		}
		if want := publishedPayload(t, cmd); !sameJSON(string(f.Data), want) {
			t.Fatalf("after %s the client got data %s, want %s", cmd, f.Data, want)
		}
	}

	// Stored: a client resuming from the cursor before both gets them from the history.
	resumed := dialV2(t, svc, "u1", map[string]string{"user": before})
	frames, err := resumed.Syncs(2, wait)
	if err != nil {
		t.Fatal(err)
	}
	var replay []history.Position
	for _, f := range frames {
		if f.Stream != "user" {
			continue
		}
		if f.IsSync() {
			if !f.IsRecovered() || f.Replayed == nil || *f.Replayed != 2 {
				t.Fatalf("resume from before the FCALLs: sync %s, want recovered with 2 replayed", f.Raw)
			}
			break
		}
		p, _ := history.ParseCursor(f.CursorString())
		replay = append(replay, p)
	}
	if len(replay) != 2 || replay[0] != published[0] || replay[1] != published[1] {
		t.Fatalf("replayed %+v, want %+v", replay, published)
	}
}

// dialV2 connects a v2 client of sub resuming from cursors; it is closed when the test ends.
func dialV2(t *testing.T, s *servicetest.Service, sub string, cursors map[string]string) *v2client.Client {
	t.Helper()
	c, err := v2client.Dial(s.DialURL(s.Token(t, sub)), cursors)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// userSync reads a fresh client's first syncs (user and broadcast) and returns the user
// stream's cursor.
func userSync(t *testing.T, c *v2client.Client) string {
	t.Helper()
	frames, err := c.Syncs(2, wait)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if f.IsSync() && f.Stream == "user" && f.CursorString() != "" {
			return f.CursorString()
		}
	}
	t.Fatalf("no sync of stream user with a cursor in %d frames", len(frames))
	return ""
}

// nextMessage is the client's next message frame.
func nextMessage(t *testing.T, c *v2client.Client) v2client.Frame {
	t.Helper()
	for {
		f, err := c.Next(wait)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == "message" {
			return f
		}
	}
}
