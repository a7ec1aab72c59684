#!/bin/sh
. /srv/lib/common.sh
SERVICE=inventory
log "serving"
