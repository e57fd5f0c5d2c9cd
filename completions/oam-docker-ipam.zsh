#compdef oam-docker-ipam

_oam_docker_ipam_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _OAM_DOCKER_IPAM_COMPLETE=complete_zsh oam-docker-ipam)
}

if [[ $zsh_eval_context[-1] == (loadautofunc|shfunc) ]]; then
    # autoloaded from $fpath: this file is the body of _oam-docker-ipam, run at each TAB
    _oam_docker_ipam_completion "$@"
else
    # sourced, e.g. from ~/.zshrc after compinit
    compdef _oam_docker_ipam_completion oam-docker-ipam
fi
