#!/bin/sh
. /srv/lib/common.sh
SERVICE=billing
log "serving"
