package model

import (
	"strconv"
	"strings"
)

var adjectives = strings.Fields(`
agile amber ancient bold brave breezy bright brisk calm candid cheerful
clever cosmic crisp curious dapper daring dazzling eager earnest electric
elegant epic fearless fiery fluent frosty gallant gentle giddy gleaming
golden graceful grand happy hardy hasty hearty humble icy jolly jovial
keen kind lively lucky lunar mellow merry mighty misty modest nimble noble
perky placid plucky polished proud quick quiet radiant rapid regal robust
rosy rustic savvy serene shiny silent silver sleek smooth snappy snowy
solar spry steady stellar stoic sturdy sunny swift tidy tranquil trusty
upbeat valiant vivid warm wise witty zany zealous zesty
`)

var animals = strings.Fields(`
aardvark albatross alpaca antelope armadillo badger barracuda beaver bison
bobcat buffalo camel capybara caribou cheetah chinchilla cobra condor
coyote crane crow dingo dolphin donkey dormouse eagle echidna eel egret
elk emu falcon ferret finch flamingo fox gazelle gecko gibbon giraffe gnu
goose gopher gorilla grouse hamster hare hawk hedgehog heron hippo hyena
ibex iguana impala jackal jaguar kangaroo kestrel kingfisher koala lemur
leopard llama lobster lynx magpie marmot meerkat mongoose moose narwhal
newt ocelot octopus orca osprey otter owl panda panther parrot pelican
penguin puffin quail rabbit raccoon raven reindeer salamander seal shark
sparrow squirrel stork swan tapir tiger toucan turtle walrus weasel wombat
yak zebra
`)

// NewAlias returns a random "adjective-animal" alias; random(n) must return
// a number in [0, n), like math/rand's IntN.
func NewAlias(random func(n int) int) string {
	return adjectives[random(len(adjectives))] + "-" + animals[random(len(animals))]
}

// UniqueAlias returns an alias that taken reports as free: up to ten random
// tries, then the last try with a number suffix ("brave-otter-2", ...).
func UniqueAlias(random func(n int) int, taken func(string) bool) string {
	alias := ""
	for range 10 {
		alias = NewAlias(random)
		if !taken(alias) {
			return alias
		}
	}
	for i := 2; ; i++ {
		candidate := alias + "-" + strconv.Itoa(i)
		if !taken(candidate) {
			return candidate
		}
	}
}
