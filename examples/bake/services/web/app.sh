#!/bin/sh
. /srv/lib/common.sh
SERVICE=web
log "serving"
