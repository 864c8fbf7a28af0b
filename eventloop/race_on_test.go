//go:build linux && race

package eventloop

const raceEnabled = true
