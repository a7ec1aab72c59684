#!/bin/sh
. /srv/lib/common.sh
SERVICE=checkout
log "serving"
