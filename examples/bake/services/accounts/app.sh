#!/bin/sh
. /srv/lib/common.sh
SERVICE=accounts
log "serving"
