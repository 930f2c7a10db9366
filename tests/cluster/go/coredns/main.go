// Command coredns is CoreDNS with only the plugins the test cluster's Corefile uses (tests/cluster/node.sh):
// `bind errors health ready kubernetes cache`. The stock build compiles every cloud provider's SDK for
// plugins the suite never loads, which takes several times as long on 2 cores.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order in which a query passes the plugins: CoreDNS's own plugin.cfg order, restricted to these.
var directives = []string{"bind", "ready", "health", "errors", "cache", "kubernetes"}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
