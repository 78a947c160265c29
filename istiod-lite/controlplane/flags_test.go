package controlplane

import "flag"

var scale = flag.Bool("scale", false, "run TestScalePushLatency at 1,000 pods / 200 services")
