package helloweb

import _ "embed"

//go:embed hello-web.init
var initScript string

// InitScript returns the SysV init script the RPM installs as
// /etc/init.d/hello-web. It runs the service under start-stop-daemon on
// hosts without systemd; HELLO_WEB_BIN, HELLO_WEB_PIDFILE, HELLO_WEB_LOG,
// HELLO_WEB_LISTEN, HELLO_WEB_USER and HELLO_WEB_DEFAULTS point it elsewhere.
func InitScript() []byte { return []byte(initScript) }
