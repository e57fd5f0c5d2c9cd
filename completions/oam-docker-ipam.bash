_oam_docker_ipam_completion() {
    local IFS=$'
'
    local line=${COMP_LINE:0:COMP_POINT} words
    IFS=$' \t' read -ra words <<< "$line"
    local cword=${#words[@]}
    [[ $line == *[[:space:]] ]] || cword=$((cword - 1))
    COMPREPLY=( $( env COMP_WORDS="$line" \
                   COMP_CWORD=$cword \
                   _OAM_DOCKER_IPAM_COMPLETE=complete_bash $1 ) )
    local typed=${line##*[[:space:]]}
    typed=${typed##*=}
    if [[ $typed == *:* && $COMP_WORDBREAKS == *:* ]]; then
        typed=${typed%"${typed##*:}"}
        COMPREPLY=( "${COMPREPLY[@]#"$typed"}" )
    fi
    return 0
}

complete -o default -F _oam_docker_ipam_completion oam-docker-ipam
