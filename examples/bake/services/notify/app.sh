#!/bin/sh
. /srv/lib/common.sh
SERVICE=notify
log "serving"
