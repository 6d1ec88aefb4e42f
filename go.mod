module github.com/polytropon/polytropon

go 1.26

require (
	github.com/HdrHistogram/hdrhistogram-go v1.1.2
	github.com/hanwen/go-fuse/v2 v2.9.0
	github.com/spf13/cobra v1.10.1
	go.uber.org/zap v1.27.0
	golang.org/x/sys v0.38.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	go.uber.org/multierr v1.10.0 // indirect
)
