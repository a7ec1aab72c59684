#!/bin/sh
# Helpers every service sources.
log() { echo "[$SERVICE] $*"; }
