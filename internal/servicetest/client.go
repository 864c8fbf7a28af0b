package servicetest

import (
	"testing"

	"github.com/huleedu/websocket-service/internal/wsclient"
)

// The service's v1 test client is internal/wsclient's; these names let a test that starts a
// service dial it without a second import.
type (
	Client      = wsclient.Client
	Message     = wsclient.Message
	DialOptions = wsclient.DialOptions
)

// Dial connects to url (a /ws URL with its token) and starts reading; see wsclient.Dial.
func Dial(t testing.TB, url string, opts ...DialOptions) *Client {
	t.Helper()
	return wsclient.Dial(t, url, opts...)
}

// TryDial is Dial that returns the error instead of failing the test.
func TryDial(url string, opts ...DialOptions) (*Client, error) { return wsclient.TryDial(url, opts...) }
