#!/bin/sh
. /srv/lib/common.sh
SERVICE=gateway
log "serving"
