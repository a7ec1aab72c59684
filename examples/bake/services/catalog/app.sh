#!/bin/sh
. /srv/lib/common.sh
SERVICE=catalog
log "serving"
