// Package browser holds the end-to-end test in a real browser: headless Chromium (Debian's
// chromium package, driven by playwright-core from npm through run.mjs) opens WebSockets to
// the service over each engine from a page the test serves. The Go test (browser_test.go)
// starts Redis, the services and the page servers, runs `node run.mjs <config>` and judges
// the JSON it prints. rollout_test.go runs a rollout (two real nodes on one Redis, one drained,
// optionally Redis restarted) through bench.RunRollout with rollout.mjs as its driver: a page
// that imports client/notifications-client.js as an ES module checks every stream.
// reload_test.go (with reload.mjs) reloads a page whose client keeps its cursors in
// sessionStorage: the new page resumes where the old one left off.
// wsclient.mjs is the Node ws client used by conformance/interop_test.go. nodews_test.go (with
// nodews.mjs) runs client/notifications-client.js in Node with npm ws's constructor passed in.
// Setup: `apt-get install chromium nodejs npm` and `(cd browser && npm ci)`; .ci/run does both.
package browser
