module github.com/caravan-cd/caravan/conformance

go 1.26.0

require (
	github.com/caravan-cd/caravan/pkg v0.0.0
	go.yaml.in/yaml/v3 v3.0.6
)

require (
	github.com/Masterminds/semver/v3 v3.5.0 // indirect
	github.com/teambition/rrule-go v1.8.2 // indirect
)

replace github.com/caravan-cd/caravan/pkg => ../pkg
